// Command go-running-count is a stateful Weir plugin: for every record it
// emits the record's key and the number of records seen with that key so
// far, as decimal text, to the first sink topic, partitioned by key, with
// no timestamp and no headers. A null key and an empty key count as the
// same key. It emits exactly what the Rust plugins/running-count emits.
//
// The counts live in an ordinary Go map, in the module's linear memory,
// which the host snapshots with every checkpoint.
//
// Build (from this directory):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags='-s -w' -o ../go_running_count.wasm .
package main

import (
	"strconv"

	"weir.dev/weir"
)

type runningCount struct {
	counts map[string]*uint64
}

func (p *runningCount) Process(batch *weir.Batch, out *weir.Output) error {
	var digits [20]byte
	for r := range batch.Records() {
		// A lookup with string(r.Key) does not copy the key; only a new
		// key is copied, into the map.
		n := p.counts[string(r.Key)]
		if n == nil {
			n = new(uint64)
			p.counts[string(r.Key)] = n
		}
		*n++
		out.Emit(r.Key, strconv.AppendUint(digits[:0], *n, 10))
	}
	return nil
}

func init() { weir.Register(&runningCount{counts: make(map[string]*uint64)}) }

// main is never run: a WASI reactor (-buildmode=c-shared) runs only init
// functions, then the host calls the exports.
func main() {}
