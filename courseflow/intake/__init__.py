"""The door's Redis side: accepting a request into its partition's stream and its course's priority set."""
