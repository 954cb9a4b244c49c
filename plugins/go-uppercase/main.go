// Command go-uppercase is a stateless Weir plugin: every record's value is
// upper-cased (ASCII only); key, headers and timestamp pass through, to the
// first sink topic, partitioned by key. It emits exactly what the Rust
// plugins/uppercase emits.
//
// The value is upper-cased where it is emitted, in the output buffer
// (Output.EmitEdited), and the headers go on as their encoded block
// (Forward): a record costs one copy and no allocation.
//
// Build (from this directory):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags='-s -w' -o ../go_uppercase.wasm .
package main

import "weir.dev/weir"

type uppercase struct{}

func (uppercase) Process(batch *weir.Batch, out *weir.Output) error {
	for r := range batch.Records() {
		out.EmitEdited(weir.Forward(r), upper)
	}
	return nil
}

// upper upper-cases the ASCII letters of v in place, eight bytes at a time
// (SWAR: Go has no wasm SIMD), then byte by byte for the tail. Bytes
// outside a-z, including every byte of a multi-byte UTF-8 sequence, are
// left alone.
func upper(v []byte) {
	const ones = 0x0101010101010101
	i := 0
	for ; i+8 <= len(v); i += 8 {
		w := le64(v[i:])
		low7 := w & (0x7f * ones)
		geA := low7 + (0x80-'a')*ones   // high bit set where the byte >= 'a'
		gtZ := low7 + (0x80-'z'-1)*ones // high bit set where the byte > 'z'
		lower := geA &^ gtZ &^ w & (0x80 * ones)
		if lower != 0 {
			putLE64(v[i:], w^(lower>>2)) // 0x80 >> 2 = 0x20, the case bit
		}
	}
	for ; i < len(v); i++ {
		if c := v[i]; 'a' <= c && c <= 'z' {
			v[i] = c - ('a' - 'A')
		}
	}
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func putLE64(b []byte, w uint64) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = byte(w), byte(w>>8), byte(w>>16), byte(w>>24)
	b[4], b[5], b[6], b[7] = byte(w>>32), byte(w>>40), byte(w>>48), byte(w>>56)
}

func init() { weir.Register(uppercase{}) }

// main is never run: a WASI reactor (-buildmode=c-shared) runs only init
// functions, then the host calls the exports.
func main() {}
