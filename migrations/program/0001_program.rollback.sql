DROP TABLE workout_sets;
DROP TABLE workout_sessions;
DROP TABLE workouts;
DROP TABLE programs;
