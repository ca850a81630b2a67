package testenv

// ServerReport is the JSON that server.php prints.
type ServerReport struct {
	// Keys are the names of every $_SERVER entry, sorted.
	Keys []string `json:"keys"`
	// Names holds, for each name asked for in ?names=, its value in
	// $_SERVER and from getenv(); nil where unset.
	Names map[string]ServerValue `json:"names"`
}

// ServerValue is one variable of a ServerReport.
type ServerValue struct {
	Server *string `json:"server"`
	Getenv *string `json:"getenv"`
}
