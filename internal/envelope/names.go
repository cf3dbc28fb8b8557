package envelope

import (
	"errors"
	"fmt"
	"regexp"
)

// ErrInvalidName reports a signal, receiver, queue or schema name outside
// the rules.
var ErrInvalidName = errors.New("signals: invalid name")

const maxNameLen = 128

var (
	signalName   = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	receiverName = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$`)
	queueName    = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	schemaName   = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
)

// ValidateSignal checks a signal name: lowercase dot-separated words of
// letters, digits and underscores, each starting with a letter, such as
// "order.placed".
func ValidateSignal(name string) error {
	if len(name) > maxNameLen || !signalName.MatchString(name) {
		return fmt.Errorf("%w: signal %q: use lowercase dot-separated words such as \"order.placed\" (letters, digits, '_'; at most %d bytes)", ErrInvalidName, name, maxNameLen)
	}
	return nil
}

// ValidateReceiver checks a receiver name: lowercase letters, digits, '_', '-'
// and '.', starting with a letter, such as "email-receipt".
func ValidateReceiver(name string) error {
	if len(name) > maxNameLen || !receiverName.MatchString(name) {
		return fmt.Errorf("%w: receiver %q: use lowercase letters, digits, '_', '-' or '.', starting with a letter, such as \"email-receipt\" (at most %d bytes)", ErrInvalidName, name, maxNameLen)
	}
	return nil
}

// ValidateQueue checks an asynq queue name: letters, digits, '_', '-', '.'.
func ValidateQueue(name string) error {
	if len(name) > maxNameLen || !queueName.MatchString(name) {
		return fmt.Errorf("%w: queue %q: use letters, digits, '_', '-' or '.' (at most %d bytes)", ErrInvalidName, name, maxNameLen)
	}
	return nil
}

// ValidateSchema checks a PostgreSQL schema name: a lowercase identifier of
// at most 63 bytes, letters, digits and underscores, not starting with a
// digit, so that it needs no quoting and fits PostgreSQL's limit.
func ValidateSchema(name string) error {
	if !schemaName.MatchString(name) {
		return fmt.Errorf("%w: schema %q: use 1 to 63 lowercase letters, digits or underscores, not starting with a digit", ErrInvalidName, name)
	}
	return nil
}
