//go:build !wasip1

package weir

import "os"

// Stand-ins for the host imports outside wasm, so that the package builds
// and a plugin's logic can be tested with go test on the build machine.
// Tests of this package replace them.

const tickExported = true

var (
	// testEmit, if set, receives what hostEmit is given.
	testEmit func(batch []byte) int32
	// testLog, if set, receives what hostLog is given.
	testLog func(level int32, line string)
	// testSinkTopics is what SinkTopics returns.
	testSinkTopics = 1
)

func hostEmit(batch []byte) int32 {
	if testEmit != nil {
		return testEmit(batch)
	}
	return EmitOk
}

func hostLog(level int32, line string) {
	if testLog != nil {
		testLog(level, line)
		return
	}
	os.Stderr.WriteString("weir log " + itoa(level) + ": " + line + "\n")
}
