package fcgi

// Pair is one FastCGI name-value pair, as carried in a PARAMS stream.
// Requests keep their pairs in the order the web server sent them.
type Pair struct {
	Name  string
	Value string
}
