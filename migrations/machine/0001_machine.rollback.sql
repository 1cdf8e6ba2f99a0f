DROP TABLE equipment_prefs;
DROP TABLE machine_notes;
