//go:build !wasip1 && !weir_abi_1_0

package weir

// SinkTopics returns the number of sink topics the job configures: an
// output record's Topic must be below it (ABI 1.1). Outside wasm it
// returns 1.
func SinkTopics() int { return testSinkTopics }
