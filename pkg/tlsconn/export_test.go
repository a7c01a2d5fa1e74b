package tlsconn

// ParseRecord and InnerType expose the record parser to the fuzz test.
var (
	ParseRecord = parseRecord
	InnerType   = innerType
)
