// Package sendhook lets a transaction wrapper learn which events were sent
// through it: signalstest.Eager runs exactly the events its own transactions
// sent, and nothing another test or process committed.
package sendhook

// Recorder is implemented by a pgx.Tx wrapper that wants to know what
// SendReliable wrote through it. SendReliable calls Sent after its insert
// succeeded, with the new event's ID.
type Recorder interface {
	Sent(eventID [16]byte)
}
