"""CourseFlow: course enrollment that survives the first second of registration."""
