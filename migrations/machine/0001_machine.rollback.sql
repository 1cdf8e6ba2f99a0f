-- loses: every machine note and equipment preference
DROP TABLE equipment_prefs;
DROP TABLE machine_notes;
