package envelope

import (
	"errors"
	"fmt"
	"regexp"
)

// ErrInvalidName reports a signal, receiver or queue name outside the rules.
var ErrInvalidName = errors.New("signals: invalid name")

const maxNameLen = 128

var (
	signalName   = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	receiverName = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$`)
	queueName    = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
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
