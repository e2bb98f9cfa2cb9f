package wire

// UnmarshalMessage exposes the plaintext decoder to the tests (package
// wire_test), which share their sample messages with the other bridge
// packages' tests through bridgetest.
var UnmarshalMessage = unmarshalMessage
