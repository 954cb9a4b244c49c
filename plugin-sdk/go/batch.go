package weir

import (
	"errors"
	"iter"
)

// Record is one input record. Key, Value and Headers are views into the
// batch's buffer, not copies: they are valid only during the call that
// received the batch, and must be copied (string(r.Key), bytes.Clone) to
// be kept across calls.
type Record struct {
	// Offset is the record's offset in its partition.
	Offset int64
	// Timestamp is the Kafka timestamp in ms since the epoch, or
	// NoTimestamp.
	Timestamp int64
	// Partition is the source partition.
	Partition int32
	// Topic is the index of the record's topic in the job's source.topics.
	Topic uint32
	// Key is nil for a null key; an empty key is a non-nil empty slice.
	Key []byte
	// Value is nil for a null value (a tombstone); an empty value is a
	// non-nil empty slice.
	Value []byte
	// Headers is the record's header block as it is encoded. Iterate it
	// with Headers.All, or pass it on unchanged with Forward.
	Headers HeaderBlock
}

// Header is one record header. Value is nil for a null header value.
type Header struct {
	Name  []byte
	Value []byte
}

// HeaderBlock is a record's headers as they are encoded: Count entries of
// the form name_len:u32 value_len:i32 name value, packed in Raw. Writing
// one into an output record is a single copy.
type HeaderBlock struct {
	// Raw holds the encoded entries.
	Raw []byte
	// Count is the number of entries in Raw.
	Count uint32
}

// All iterates the headers of the block, in order. Names and values are
// views into the block. It stops early at a malformed entry, which an
// input block never has (the SDK checks every batch before Process).
func (h HeaderBlock) All() iter.Seq[Header] {
	return func(yield func(Header) bool) {
		rest := h.Raw
		for range h.Count {
			hd, next, ok := splitEntry(rest)
			if !ok || !yield(hd) {
				return
			}
			rest = next
		}
	}
}

// Get returns the value of the first header named name. ok is false when
// there is none; value is nil when the header is there with a null value.
func (h HeaderBlock) Get(name string) (value []byte, ok bool) {
	rest := h.Raw
	for range h.Count {
		hd, next, valid := splitEntry(rest)
		if !valid {
			break
		}
		if string(hd.Name) == name {
			return hd.Value, true
		}
		rest = next
	}
	return nil, false
}

// Batch is an input batch: the records of one call to weir_process, all
// from one partition of one source topic, in offset order. It is valid
// only during that call.
type Batch struct {
	buf   []byte
	count int
}

// Len returns the number of records in the batch.
func (b *Batch) Len() int { return b.count }

// Records iterates the batch's records in order:
//
//	for r := range batch.Records() { ... }
//
// Each Record is a value whose slices point into the batch: iterating
// allocates nothing. Records are checked as they are read; a malformed
// batch (which the host never sends) ends the call with StatusBadInput.
func (b *Batch) Records() iter.Seq[Record] {
	return func(yield func(Record) bool) {
		pos := BatchHeaderLen
		for range b.count {
			r, size, err := decodeRecord(b.buf[pos:])
			if err != nil {
				panic(badInput{err})
			}
			if !yield(r) {
				return
			}
			// The last record's padding may be omitted.
			pos = min(pos+size, len(b.buf))
		}
	}
}

// Errors of a batch or config block that cannot be decoded.
var (
	errTruncated = errors.New("batch truncated")
	errBadLength = errors.New("invalid length field")
)

// badInput is the panic value that ends a call whose input cannot be
// decoded; guard turns it into StatusBadInput.
type badInput struct{ err error }

// decodeRecord returns the record at the start of b and its size
// including padding, checking every length as the Rust SDK does.
func decodeRecord(b []byte) (r Record, size int, err error) {
	if len(b) < RecordHeaderLen {
		return r, 0, errTruncated
	}
	keyLen, err := optLen(int32(le32(b[24:])))
	if err != nil {
		return r, 0, err
	}
	valueLen, err := optLen(int32(le32(b[28:])))
	if err != nil {
		return r, 0, err
	}
	headersLen := uint64(le32(b[32:]))
	used := uint64(RecordHeaderLen) + keyLen + valueLen + headersLen
	if used > uint64(len(b)) {
		return r, 0, errTruncated
	}
	r.Offset = int64(le64(b))
	r.Timestamp = int64(le64(b[8:]))
	r.Partition = int32(le32(b[16:]))
	r.Topic = le32(b[20:])
	pos := uint64(RecordHeaderLen)
	if int32(le32(b[24:])) != NullLen {
		r.Key = b[pos : pos+keyLen : pos+keyLen]
		pos += keyLen
	}
	if int32(le32(b[28:])) != NullLen {
		r.Value = b[pos : pos+valueLen : pos+valueLen]
		pos += valueLen
	}
	r.Headers = HeaderBlock{Raw: b[pos:used:used], Count: le32(b[36:])}
	if r.Headers.Count != 0 || headersLen != 0 {
		if err := checkEntries(r.Headers.Raw, r.Headers.Count, true); err != nil {
			return r, 0, err
		}
	}
	return r, int(alignUp(used)), nil
}

// optLen turns a stored length (-1 for null) into a byte count.
func optLen(n int32) (uint64, error) {
	switch {
	case n >= 0:
		return uint64(n), nil
	case n == NullLen:
		return 0, nil
	default:
		return 0, errBadLength
	}
}

// checkEntries checks that block holds exactly count header (or config)
// entries; exact is false for a config block, which may have bytes after
// its last entry.
func checkEntries(block []byte, count uint32, exact bool) error {
	rest := block
	for range count {
		if len(rest) < 8 {
			return errTruncated
		}
		nameLen := uint64(le32(rest))
		valueLen, err := optLen(int32(le32(rest[4:])))
		if err != nil {
			return err
		}
		if 8+nameLen+valueLen > uint64(len(rest)) {
			return errTruncated
		}
		rest = rest[8+nameLen+valueLen:]
	}
	if exact && len(rest) != 0 {
		return errBadLength
	}
	return nil
}

// splitEntry decodes the header (or config) entry at the start of b.
func splitEntry(b []byte) (h Header, rest []byte, ok bool) {
	if len(b) < 8 {
		return Header{}, nil, false
	}
	nameLen := uint64(le32(b))
	valueLen := int32(le32(b[4:]))
	end := 8 + nameLen
	if end > uint64(len(b)) {
		return Header{}, nil, false
	}
	h.Name = b[8:end:end]
	if valueLen >= 0 {
		vend := end + uint64(valueLen)
		if vend > uint64(len(b)) {
			return Header{}, nil, false
		}
		h.Value = b[end:vend:vend]
		end = vend
	} else if valueLen != NullLen {
		return Header{}, nil, false
	}
	return h, b[end:], true
}

// alignUp rounds n up to RecordAlign.
func alignUp(n uint64) uint64 {
	return (n + uint64(RecordAlign) - 1) &^ (uint64(RecordAlign) - 1)
}

// le32 reads a little-endian uint32 from the start of b.
func le32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// le64 reads a little-endian uint64 from the start of b.
func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// put32 writes v little-endian at the start of b.
func put32(b []byte, v uint32) {
	_ = b[3]
	b[0] = byte(v)
	b[1] = byte(v >> 8)
	b[2] = byte(v >> 16)
	b[3] = byte(v >> 24)
}

// put64 writes v little-endian at the start of b.
func put64(b []byte, v uint64) {
	_ = b[7]
	b[0] = byte(v)
	b[1] = byte(v >> 8)
	b[2] = byte(v >> 16)
	b[3] = byte(v >> 24)
	b[4] = byte(v >> 32)
	b[5] = byte(v >> 40)
	b[6] = byte(v >> 48)
	b[7] = byte(v >> 56)
}
