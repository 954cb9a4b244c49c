//go:build !wasip1

// The SDK's tests run on the build machine (go test), with host
// stand-ins that record what a plugin emits and logs.

package weir

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unsafe"
)

// rec is a record as a test writes it into an input batch.
type rec struct {
	offset, timestamp int64
	partition         int32
	topic             uint32
	key, value        []byte
	headers           []Header
}

// encode lays recs out as the host does (docs/ABI.md section 4).
func encode(recs ...rec) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(recs)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range recs {
		start := len(b)
		var hb []byte
		for _, h := range r.headers {
			hb = binary.LittleEndian.AppendUint32(hb, uint32(len(h.Name)))
			hb = binary.LittleEndian.AppendUint32(hb, uint32(lenOf(h.Value)))
			hb = append(append(hb, h.Name...), h.Value...)
		}
		b = binary.LittleEndian.AppendUint64(b, uint64(r.offset))
		b = binary.LittleEndian.AppendUint64(b, uint64(r.timestamp))
		b = binary.LittleEndian.AppendUint32(b, uint32(r.partition))
		b = binary.LittleEndian.AppendUint32(b, r.topic)
		b = binary.LittleEndian.AppendUint32(b, uint32(lenOf(r.key)))
		b = binary.LittleEndian.AppendUint32(b, uint32(lenOf(r.value)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(hb)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.headers)))
		b = append(append(append(b, r.key...), r.value...), hb...)
		for (len(b)-start)%RecordAlign != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// funcPlugin adapts functions to the plugin interfaces.
type funcPlugin struct {
	process func(*Batch, *Output) error
	init    func(Config) error
	tick    func(int64, int64, *Output) error
}

func (p *funcPlugin) Process(b *Batch, out *Output) error { return p.process(b, out) }
func (p *funcPlugin) Init(c Config) error                 { return p.init(c) }

type tickPlugin struct{ funcPlugin }

func (p *tickPlugin) OnTick(wm, now int64, out *Output) error { return p.tick(wm, now, out) }

// host records what the SDK hands the host during a test.
type host struct {
	emitted [][]byte
	logs    []string
	emitRC  int32
}

// use installs p as the module's plugin (Register allows one per process)
// and a fresh host.
func use(t *testing.T, p Plugin) *host {
	t.Helper()
	h := &host{}
	plugin, initer, ticker = nil, nil, nil
	Register(p)
	output = Output{}
	testEmit = func(b []byte) int32 {
		h.emitted = append(h.emitted, bytes.Clone(b))
		return h.emitRC
	}
	testLog = func(level int32, line string) {
		h.logs = append(h.logs, string(rune('0'+level))+" "+line)
	}
	t.Cleanup(func() { testEmit, testLog = nil, nil })
	return h
}

// call runs weir_process on batch as the wasm export does.
func call(batch []byte) int32 {
	buf := inputBuffer(int32(len(batch)))
	copy(buf, batch)
	return guard("weir_process", func() int32 { return doProcess(buf[:len(batch)]) })
}

func forwardAll(b *Batch, out *Output) error {
	for r := range b.Records() {
		out.EmitRecord(Forward(r))
	}
	return nil
}

// The worked example of docs/ABI.md section 5, byte for byte.
func TestWorkedExample(t *testing.T) {
	batch := encode(rec{offset: 5, timestamp: 1000, partition: 2, key: []byte("k"), value: []byte("hi")})
	want := []byte{
		1, 0, 0, 0, 0, 0, 0, 0,
		5, 0, 0, 0, 0, 0, 0, 0,
		0xe8, 3, 0, 0, 0, 0, 0, 0,
		2, 0, 0, 0, 0, 0, 0, 0,
		1, 0, 0, 0, 2, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0,
		'k', 'h', 'i', 0, 0, 0, 0, 0,
	}
	if !bytes.Equal(batch, want) {
		t.Fatalf("encode:\n got %x\nwant %x", batch, want)
	}
	var got []Record
	h := use(t, &funcPlugin{process: func(b *Batch, out *Output) error {
		if b.Len() != 1 {
			t.Errorf("Len = %d", b.Len())
		}
		for r := range b.Records() {
			got = append(got, r)
			out.EmitRecord(OutRecord{Partition: 2, Timestamp: r.Timestamp, Key: r.Key, Value: r.Value})
		}
		return nil
	}})
	if st := call(batch); st != StatusOk {
		t.Fatalf("status %d, logs %q", st, h.logs)
	}
	r := got[0]
	if r.Offset != 5 || r.Timestamp != 1000 || r.Partition != 2 || r.Topic != 0 ||
		string(r.Key) != "k" || string(r.Value) != "hi" || r.Headers.Count != 0 {
		t.Errorf("decoded %+v", r)
	}
	// Output: offset 0, otherwise the same bytes.
	want[8] = 0
	if len(h.emitted) != 1 || !bytes.Equal(h.emitted[0], want) {
		t.Errorf("emitted %x\n    want %x", h.emitted, want)
	}
}

// The header example of docs/ABI.md section 4: trace = "ab", x = null.
func TestHeaders(t *testing.T) {
	hs := []Header{{Name: []byte("trace"), Value: []byte("ab")}, {Name: []byte("x")}}
	batch := encode(rec{key: []byte("k"), value: []byte{}, headers: hs})
	block := batch[8+40+1 : 8+40+1+24]
	wantBlock := []byte{5, 0, 0, 0, 2, 0, 0, 0, 't', 'r', 'a', 'c', 'e', 'a', 'b', 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 'x'}
	if !bytes.Equal(block, wantBlock) {
		t.Fatalf("block %x", block)
	}
	extra := []Header{{Name: []byte("added"), Value: []byte("1")}}
	h := use(t, &funcPlugin{process: func(b *Batch, out *Output) error {
		for r := range b.Records() {
			if r.Value == nil || len(r.Value) != 0 {
				t.Errorf("empty value decoded as %#v", r.Value)
			}
			var names []string
			for hd := range r.Headers.All() {
				names = append(names, string(hd.Name)+"="+string(hd.Value)+strings.Repeat("(null)", btoi(hd.Value == nil)))
			}
			if got := strings.Join(names, ","); got != "trace=ab,x=(null)" {
				t.Errorf("headers %s", got)
			}
			if v, ok := r.Headers.Get("trace"); !ok || string(v) != "ab" {
				t.Errorf("Get(trace) = %q, %v", v, ok)
			}
			if v, ok := r.Headers.Get("x"); !ok || v != nil {
				t.Errorf("Get(x) = %q, %v", v, ok)
			}
			if _, ok := r.Headers.Get("y"); ok {
				t.Errorf("Get(y) found")
			}
			o := Forward(r)
			o.Headers = extra
			out.EmitRecord(o)
		}
		return nil
	}})
	if st := call(batch); st != StatusOk {
		t.Fatalf("status %d, logs %q", st, h.logs)
	}
	want := encode(rec{timestamp: 0, partition: AnyPartition, key: []byte("k"), value: []byte{}, headers: append(hs, extra...)})
	if !bytes.Equal(h.emitted[0], want) {
		t.Errorf("emitted\n %x\nwant\n %x", h.emitted[0], want)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Forwarding every record gives back the input, but for the output
// fields: offset 0, partition AnyPartition, topic 0.
func TestForwardRoundTrip(t *testing.T) {
	var in, out []rec
	for i := range 300 {
		r := rec{offset: int64(i), timestamp: int64(1000 + i), partition: 7, topic: 1}
		if i%5 != 0 {
			r.key = bytes.Repeat([]byte{byte('a' + i%26)}, i%40)
		}
		if i%7 != 0 {
			r.value = bytes.Repeat([]byte{byte(i)}, i%70)
		}
		if i%3 == 0 {
			r.headers = []Header{{Name: []byte("h"), Value: r.key}}
		}
		in = append(in, r)
		r.offset, r.partition, r.topic = 0, AnyPartition, 0
		out = append(out, r)
	}
	h := use(t, &funcPlugin{process: forwardAll})
	// Twice: the second time the output buffer holds the first batch's
	// bytes, which must not leak into padding.
	for range 2 {
		h.emitted = nil
		if st := call(encode(in...)); st != StatusOk {
			t.Fatalf("status %d, logs %q", st, h.logs)
		}
		if len(h.emitted) != 1 || !bytes.Equal(h.emitted[0], encode(out...)) {
			t.Fatalf("forwarded batch differs")
		}
	}
}

func TestEmitEditedAndNulls(t *testing.T) {
	h := use(t, &funcPlugin{process: func(b *Batch, out *Output) error {
		for r := range b.Records() {
			out.EmitEdited(Forward(r), func(v []byte) {
				for i := range v {
					v[i]++
				}
			})
		}
		out.Emit(nil, nil)
		out.Emit([]byte{}, []byte("v"))
		return nil
	}})
	in := rec{timestamp: 9, key: []byte("k"), value: []byte("abc")}
	tomb := rec{timestamp: 10, key: []byte("k")}
	if st := call(encode(in, tomb)); st != StatusOk {
		t.Fatalf("status %d, logs %q", st, h.logs)
	}
	want := encode(
		rec{timestamp: 9, partition: -1, key: []byte("k"), value: []byte("bcd")},
		rec{timestamp: 10, partition: -1, key: []byte("k")},
		rec{timestamp: -1, partition: -1},
		rec{timestamp: -1, partition: -1, key: []byte{}, value: []byte("v")},
	)
	if !bytes.Equal(h.emitted[0], want) {
		t.Errorf("emitted\n %x\nwant\n %x", h.emitted[0], want)
	}
	// The input is untouched.
	if string(input[8+40+1:8+40+4]) != "abc" {
		t.Errorf("input changed")
	}
}

// Output goes to the host in chunks once FlushAt bytes are buffered.
func TestFlushInChunks(t *testing.T) {
	value := make([]byte, 1000)
	h := use(t, &funcPlugin{process: func(b *Batch, out *Output) error {
		for range 1000 {
			out.Emit(nil, value)
		}
		return nil
	}})
	if st := call(encode(rec{})); st != StatusOk {
		t.Fatalf("status %d", st)
	}
	total := 0
	for _, b := range h.emitted {
		if len(b) > FlushAt+1040 {
			t.Errorf("chunk of %d bytes", len(b))
		}
		total += int(le32(b))
	}
	if total != 1000 || len(h.emitted) < 4 {
		t.Errorf("%d records in %d chunks", total, len(h.emitted))
	}
}

func TestStatuses(t *testing.T) {
	good := encode(rec{key: []byte("k"), value: []byte("v")})
	t.Run("error", func(t *testing.T) {
		h := use(t, &funcPlugin{process: func(b *Batch, out *Output) error {
			out.Emit(nil, []byte("before"))
			return errors.New("bad record")
		}})
		if st := call(good); st != StatusPluginError {
			t.Errorf("status %d", st)
		}
		if len(h.emitted) != 1 || h.logs[len(h.logs)-1] != "1 bad record" {
			t.Errorf("emitted %d, logs %q", len(h.emitted), h.logs)
		}
	})
	t.Run("panic", func(t *testing.T) {
		h := use(t, &funcPlugin{process: func(b *Batch, out *Output) error {
			out.Emit(nil, []byte("dropped"))
			var m map[string]int
			m["x"] = 1
			return nil
		}})
		if st := call(good); st != StatusPluginError {
			t.Errorf("status %d", st)
		}
		last := h.logs[len(h.logs)-1]
		if len(h.emitted) != 0 || !strings.HasPrefix(last, "1 weir_process: panic: assignment to entry in nil map") {
			t.Errorf("emitted %d, logs %q", len(h.emitted), h.logs)
		}
		// The next call works.
		plugin = &funcPlugin{process: forwardAll}
		if st := call(good); st != StatusOk || len(h.emitted) != 1 {
			t.Errorf("after a panic: status %d, emitted %d", st, len(h.emitted))
		}
	})
	t.Run("emit refused", func(t *testing.T) {
		h := use(t, &funcPlugin{process: forwardAll})
		h.emitRC = EmitBadTopic
		if st := call(good); st != StatusEmitRefused || h.logs[len(h.logs)-1] != "1 weir.emit returned -1" {
			t.Errorf("status %d, logs %q", st, h.logs)
		}
		h.emitRC = EmitOk
		if st := call(good); st != StatusOk {
			t.Errorf("the error outlived its call: status %d", st)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		h := use(t, &funcPlugin{process: forwardAll})
		for _, tc := range []struct {
			name  string
			batch []byte
			log   string
		}{
			{"short", []byte{1, 0, 0}, "batch truncated"},
			{"count beyond data", append([]byte{2, 0, 0, 0}, good[4:]...), "batch truncated"},
			{"cut record", good[:8+40], "batch truncated"},
			{"negative length", func() []byte {
				b := bytes.Clone(good)
				put32(b[8+24:], uint32(0xfffffffb))
				return b
			}(), "invalid length field"},
			{"header block", func() []byte {
				b := encode(rec{headers: []Header{{Name: []byte("n")}}})
				put32(b[8+36:], 2)
				return b
			}(), "batch truncated"},
		} {
			h.logs, h.emitted = nil, nil
			if st := call(tc.batch); st != StatusBadInput {
				t.Errorf("%s: status %d", tc.name, st)
			}
			if len(h.logs) == 0 || h.logs[len(h.logs)-1] != "1 input batch: "+tc.log {
				t.Errorf("%s: logs %q", tc.name, h.logs)
			}
			if len(h.emitted) != 0 {
				t.Errorf("%s: emitted output", tc.name)
			}
		}
	})
	t.Run("no plugin", func(t *testing.T) {
		use(t, &funcPlugin{process: forwardAll})
		plugin = nil
		if st := call(good); st != StatusPluginError {
			t.Errorf("status %d", st)
		}
	})
}

// The config example of docs/ABI.md section 6, byte for byte.
func TestConfig(t *testing.T) {
	block := []byte{
		3, 0, 0, 0,
		3, 0, 0, 0, 1, 0, 0, 0, 'm', 'i', 'n', '3',
		7, 0, 0, 0, 4, 0, 0, 0, 'r', 'u', 'l', 'e', '.', 'o', 'n', 't', 'r', 'u', 'e',
		4, 0, 0, 0, 1, 0, 0, 0, 'w', 'o', 'r', 'd', 'a',
	}
	if len(block) != 48 {
		t.Fatalf("example is %d bytes", len(block))
	}
	var got Config
	h := use(t, &funcPlugin{init: func(c Config) error { got = c; return nil }})
	if st := doInit(block); st != StatusOk {
		t.Fatalf("status %d, logs %q", st, h.logs)
	}
	if v, ok := got.Get("word"); !ok || v != "a" {
		t.Errorf("word = %q, %v", v, ok)
	}
	if n, err := got.Int("min", 0); n != 3 || err != nil {
		t.Errorf("min = %d, %v", n, err)
	}
	if on, err := got.Bool("rule.on", false); !on || err != nil {
		t.Errorf("rule.on = %v, %v", on, err)
	}
	if n, err := got.Int("absent", 7); n != 7 || err != nil {
		t.Errorf("absent = %d, %v", n, err)
	}
	if _, err := got.Int("word", 0); err == nil || err.Error() != "config `word` = \"a\": invalid syntax" {
		t.Errorf("Int(word) error %v", err)
	}
	if _, err := got.Require("nope"); err == nil || err.Error() != "config `nope` is required" {
		t.Errorf("Require error %v", err)
	}
	var keys []string
	for k, v := range got.All() {
		keys = append(keys, k+"="+v)
	}
	if strings.Join(keys, " ") != "min=3 rule.on=true word=a" || got.Len() != 3 {
		t.Errorf("All: %v", keys)
	}

	// Init errors, and a block that does not decode.
	use(t, &funcPlugin{init: func(Config) error { return errors.New("no word") }})
	if st := doInit(block); st != StatusPluginError {
		t.Errorf("status %d", st)
	}
	h = use(t, &funcPlugin{init: func(Config) error { return nil }})
	if st := doInit(block[:20]); st != StatusBadInput || h.logs[0] != "1 init failed: config block: batch truncated" {
		t.Errorf("status %d, logs %q", st, h.logs)
	}
	if st := doInit([]byte{0, 0, 0, 0}); st != StatusOk {
		t.Errorf("empty config: status %d", st)
	}
}

func TestTick(t *testing.T) {
	h := use(t, &funcPlugin{process: forwardAll})
	if st := doTick(WatermarkNone, 1); st != StatusOk || len(h.emitted) != 0 {
		t.Errorf("no Ticker: status %d", st)
	}
	var seen []int64
	p := &tickPlugin{}
	p.process = forwardAll
	p.tick = func(wm, now int64, out *Output) error {
		seen = append(seen, wm, now)
		out.Emit([]byte("w"), nil)
		return nil
	}
	h = use(t, p)
	if st := doTick(WatermarkEnd, 42); st != StatusOk {
		t.Errorf("status %d", st)
	}
	if len(seen) != 2 || seen[0] != WatermarkEnd || seen[1] != 42 || len(h.emitted) != 1 {
		t.Errorf("seen %v, emitted %d", seen, len(h.emitted))
	}
}

// Iterating a batch and emitting allocates nothing once the buffers have
// grown.
func TestNoAllocationPerRecord(t *testing.T) {
	var recs []rec
	for i := range 500 {
		recs = append(recs, rec{key: []byte("key"), value: bytes.Repeat([]byte("v"), i%50),
			headers: []Header{{Name: []byte("h"), Value: []byte("x")}}})
	}
	batch := encode(recs...)
	use(t, &funcPlugin{process: func(b *Batch, out *Output) error {
		for r := range b.Records() {
			out.EmitEdited(Forward(r), func(v []byte) {
				for i := range v {
					v[i] &^= 0x20
				}
			})
			for range r.Headers.All() {
			}
		}
		return nil
	}})
	emitted := 0
	testEmit = func([]byte) int32 { emitted++; return EmitOk } // keeps nothing
	call(batch)
	if n := testing.AllocsPerRun(20, func() { call(batch) }); n != 0 || emitted == 0 {
		t.Errorf("%v allocations per batch of 500", n)
	}
}

func unsafeAddr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

func TestInputBuffer(t *testing.T) {
	use(t, &funcPlugin{process: forwardAll})
	input = nil
	for _, size := range []int32{4, 8, 100, 64 << 10, 64<<10 + 1, 3 << 20, 10} {
		buf := inputBuffer(size)
		if len(buf) < int(size) {
			t.Errorf("size %d: got %d bytes", size, len(buf))
		}
		ptr := uintptr(0)
		if b, ok := inputAt(uintptr(unsafeAddr(buf)), size); ok {
			ptr = uintptr(unsafeAddr(b))
		}
		if ptr == 0 || ptr%8 != 0 {
			t.Errorf("size %d: inputAt failed or unaligned (%#x)", size, ptr)
		}
	}
	if _, ok := inputAt(uintptr(unsafeAddr(input))+8, 4); ok {
		t.Errorf("inputAt accepted a pointer into the middle")
	}
	if st := badPointer("weir_process", 1, 2); st != StatusBadInput {
		t.Errorf("status %d", st)
	}
}
