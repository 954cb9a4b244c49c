package weir

// FlushAt is the number of buffered bytes at which an [Output] hands its
// records to the host before the call ends.
const FlushAt = 256 * 1024

// OutRecord is one output record. Start from [NewOutRecord] or [Forward]
// and change the fields that differ: the zero value targets partition 0
// with timestamp 0, which is rarely meant.
type OutRecord struct {
	// Topic is the index into the job's sink.topics (0 = the first); it
	// must be below SinkTopics().
	Topic uint32
	// Partition is the target partition, or AnyPartition to let the
	// host's partitioner choose by key.
	Partition int32
	// Timestamp is in ms since the epoch, or NoTimestamp to let the
	// producer stamp the current time.
	Timestamp int64
	// Key is nil for a null key.
	Key []byte
	// Value is nil for a null value.
	Value []byte
	// Headers are written after those of HeaderBlock. A nil Value in a
	// Header is a null header value.
	Headers []Header
	// HeaderBlock holds headers already encoded (an input record's
	// Headers), written first and as they are: the cheap way to pass a
	// record's headers on.
	HeaderBlock HeaderBlock
}

// NewOutRecord returns a record with this key and value for the first sink
// topic, partitioned by key, with no timestamp and no headers.
func NewOutRecord(key, value []byte) OutRecord {
	return OutRecord{Partition: AnyPartition, Timestamp: NoTimestamp, Key: key, Value: value}
}

// Forward returns the input record r passed on: its key, value, headers
// and timestamp, for the first sink topic, partitioned by key.
func Forward(r Record) OutRecord {
	return OutRecord{
		Partition:   AnyPartition,
		Timestamp:   r.Timestamp,
		Key:         r.Key,
		Value:       r.Value,
		HeaderBlock: r.Headers,
	}
}

// Output collects the records a plugin emits during one call and hands
// them to the host with weir.emit: when FlushAt bytes are buffered, on
// Flush, and when the call returns. The SDK owns the one Output of a
// module and reuses its buffer across calls, so emitting allocates nothing
// once the buffer has grown. The host copies what it is given, so the
// key, value and header slices may be reused as soon as an Emit method
// returns.
type Output struct {
	buf     []byte // always initialised; n bytes of it are pending
	n       int
	count   uint32
	emitErr int32 // the first error weir.emit returned in this call
}

// Emit emits a record with this key and value (nil for null) to the first
// sink topic, partitioned by key, with no timestamp and no headers.
func (o *Output) Emit(key, value []byte) {
	r := OutRecord{Partition: AnyPartition, Timestamp: NoTimestamp, Key: key, Value: value}
	o.write(&r, nil)
}

// EmitRecord emits a fully specified record.
func (o *Output) EmitRecord(r OutRecord) {
	o.write(&r, nil)
}

// EmitEdited emits r with its value copied into the output buffer and
// then changed there, in place, by edit: a map that keeps the value's
// length (upper-casing, masking) needs no buffer of its own and costs one
// copy. A null value stays null and edit is not called. edit must not keep
// the slice it is given.
func (o *Output) EmitEdited(r OutRecord, edit func(value []byte)) {
	o.write(&r, edit)
}

// Pending returns the number of records buffered and not yet handed to the
// host.
func (o *Output) Pending() int { return int(o.count) }

// EmitError returns the first error weir.emit returned during this call
// (EmitBadTopic, EmitMalformed), or EmitOk. After a call in which it is
// not EmitOk, the SDK logs it and returns status 3.
func (o *Output) EmitError() int32 { return o.emitErr }

// Flush hands the buffered records to the host now.
func (o *Output) Flush() {
	if o.count == 0 {
		return
	}
	put32(o.buf, o.count)
	put32(o.buf[4:], 0)
	if rc := hostEmit(o.buf[:o.n]); rc != EmitOk && o.emitErr == EmitOk {
		o.emitErr = rc
	}
	o.n = 0
	o.count = 0
}

// reset drops what is buffered and forgets emit errors: the start of a call.
func (o *Output) reset() {
	o.n = 0
	o.count = 0
	o.emitErr = EmitOk
}

// write appends one record, then lets edit change its value in place.
func (o *Output) write(r *OutRecord, edit func([]byte)) {
	headersLen := len(r.HeaderBlock.Raw)
	for _, h := range r.Headers {
		headersLen += 8 + len(h.Name) + len(h.Value)
	}
	used := RecordHeaderLen + len(r.Key) + len(r.Value) + headersLen
	size := int(alignUp(uint64(used)))
	if o.n == 0 {
		o.n = BatchHeaderLen // the batch header, filled in by Flush
	}
	start := o.n
	if len(o.buf) < start+size {
		o.grow(start + size)
	}
	rec := o.buf[start : start+size : start+size]
	// Padding (under 8 bytes) lies in the record's last word; the buffer
	// is reused, so clear it.
	put64(rec[size-8:], 0)
	put64(rec, 0) // offset: ignored on output
	put64(rec[8:], uint64(r.Timestamp))
	put32(rec[16:], uint32(r.Partition))
	put32(rec[20:], r.Topic)
	put32(rec[24:], uint32(lenOf(r.Key)))
	put32(rec[28:], uint32(lenOf(r.Value)))
	put32(rec[32:], uint32(headersLen))
	put32(rec[36:], r.HeaderBlock.Count+uint32(len(r.Headers)))
	pos := RecordHeaderLen
	pos += copyBytes(rec[pos:], r.Key)
	v := rec[pos : pos+len(r.Value)]
	pos += copyBytes(v, r.Value)
	if edit != nil && r.Value != nil {
		edit(v)
	}
	pos += copyBytes(rec[pos:], r.HeaderBlock.Raw)
	for _, h := range r.Headers {
		put32(rec[pos:], uint32(len(h.Name)))
		put32(rec[pos+4:], uint32(lenOf(h.Value)))
		pos += 8
		pos += copyBytes(rec[pos:], h.Name)
		pos += copyBytes(rec[pos:], h.Value)
	}
	o.n = start + size
	o.count++
	if o.n >= FlushAt {
		o.Flush()
	}
}

// grow makes the buffer at least n bytes, keeping what is pending.
func (o *Output) grow(n int) {
	c := max(2*len(o.buf), 4096)
	for c < n {
		c *= 2
	}
	buf := make([]byte, c)
	copy(buf, o.buf[:min(o.n, len(o.buf))])
	o.buf = buf
}

// copyBytes copies src to the start of dst and returns len(src). Up to 32
// bytes it copies with a few word loads and stores, inline: Go's copy is a
// call to runtime.memmove, which on wasm is memory.copy, and under
// Cranelift that is a call out of the guest, dearer than copying a key.
func copyBytes(dst, src []byte) int {
	n := len(src)
	switch {
	case n == 0:
	case n < 4:
		a, b, c := src[0], src[n/2], src[n-1]
		dst[0], dst[n/2], dst[n-1] = a, b, c
	case n < 8:
		a, b := le32(src), le32(src[n-4:])
		put32(dst, a)
		put32(dst[n-4:], b)
	case n <= 16:
		a, b := le64(src), le64(src[n-8:])
		put64(dst, a)
		put64(dst[n-8:], b)
	case n <= 32:
		a, b, c, d := le64(src), le64(src[8:]), le64(src[n-16:]), le64(src[n-8:])
		put64(dst, a)
		put64(dst[8:], b)
		put64(dst[n-16:], c)
		put64(dst[n-8:], d)
	default:
		copy(dst, src)
	}
	return n
}

// lenOf is a field's stored length: NullLen for nil.
func lenOf(b []byte) int32 {
	if b == nil {
		return NullLen
	}
	return int32(len(b))
}
