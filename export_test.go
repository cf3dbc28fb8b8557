package signals

// The tests of package signals_test read these unexported values, which
// users read in the doc comments of the options they default.
const (
	DefaultReceiverMaxRetries = defaultMaxRetries
	DefaultReceiverTimeout    = defaultTimeout
	DefaultReceiverBackoffMin = defaultBackoffMin
	DefaultReceiverBackoffMax = defaultBackoffMax
	MaxOrderingKeyBytes       = maxOrderingKeyBytes
)
