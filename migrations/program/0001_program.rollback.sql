-- loses: every program, workout, workout session and logged set
DROP TABLE workout_sets;
DROP TABLE workout_sessions;
DROP TABLE workouts;
DROP TABLE programs;
