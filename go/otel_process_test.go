package tld

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

func init() {
	scenarios["otel-process"] = scenarioOtelProcess
}

// TestOtelProcessContext: PublishProcessContext writes the OTEP 4719
// OTEL_CTX mapping (found in /proc/self/maps, header and protobuf payload
// decoded here from the OTEP's field numbers), replaces the attributes on
// republication, and refuses bad attributes with EINVAL.
func TestOtelProcessContext(t *testing.T) { inChild(t, "otel-process") }

// processContext is what the mapping holds: its header and the decoded
// resource attributes (strings, bools, ints and floats as Go values; the
// attribute key map as []string).
type processContext struct {
	version     uint32
	publishedAt uint64
	attrs       map[string]any
}

// at is the memory at addr, a mapping Go does not manage (vet's
// uintptr-to-pointer rule is for Go memory, which may move).
func at(addr uintptr, n int) []byte {
	return unsafe.Slice(*(**byte)(unsafe.Pointer(&addr)), n)
}

func readProcessContext(addr uintptr) (processContext, error) {
	header := at(addr, 32)
	if string(header[:8]) != "OTEL_CTX" {
		return processContext{}, fmt.Errorf("signature %q", header[:8])
	}
	pc := processContext{
		version:     binary.NativeEndian.Uint32(header[8:]),
		publishedAt: binary.NativeEndian.Uint64(header[16:]),
	}
	size := binary.NativeEndian.Uint32(header[12:])
	payloadAt := uintptr(binary.NativeEndian.Uint64(header[24:]))
	if payloadAt != addr+32 {
		return pc, fmt.Errorf("payload at %#x, want right after the header at %#x", payloadAt, addr+32)
	}
	payload := bytes.Clone(at(payloadAt, int(size)))
	attrs, err := decodeResource(payload)
	pc.attrs = attrs
	return pc, err
}

// protoFields splits a protobuf message into (field number, wire type,
// varint or fixed value, bytes of a length-delimited field).
func protoFields(b []byte, each func(field int, wire int, v uint64, data []byte) error) error {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("bad tag")
		}
		b = b[n:]
		field, wire := int(tag>>3), int(tag&7)
		var v uint64
		var data []byte
		switch wire {
		case 0:
			v, n = binary.Uvarint(b)
			if n <= 0 {
				return errors.New("bad varint")
			}
			b = b[n:]
		case 1:
			if len(b) < 8 {
				return errors.New("short fixed64")
			}
			v, b = binary.LittleEndian.Uint64(b), b[8:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return errors.New("bad length")
			}
			data, b = b[n:n+int(l)], b[n+int(l):]
		default:
			return fmt.Errorf("wire type %d", wire)
		}
		if err := each(field, wire, v, data); err != nil {
			return err
		}
	}
	return nil
}

// decodeAnyValue: string_value 1, bool_value 2, int_value 3, double_value 4,
// array_value 5 (ArrayValue.values 1).
func decodeAnyValue(b []byte) (any, error) {
	var out any
	err := protoFields(b, func(field, _ int, v uint64, data []byte) error {
		switch field {
		case 1:
			out = string(data)
		case 2:
			out = v != 0
		case 3:
			out = int64(v)
		case 4:
			out = math.Float64frombits(v)
		case 5:
			var list []string
			err := protoFields(data, func(f, _ int, _ uint64, item []byte) error {
				s, err := decodeAnyValue(item)
				if str, ok := s.(string); ok && f == 1 {
					list = append(list, str)
				}
				return err
			})
			out = list
			return err
		}
		return nil
	})
	return out, err
}

// decodeResource: Resource.attributes 1 (KeyValue: key 1, value 2).
func decodeResource(b []byte) (map[string]any, error) {
	attrs := map[string]any{}
	err := protoFields(b, func(field, _ int, _ uint64, kv []byte) error {
		if field != 1 {
			return nil
		}
		var key string
		var value any
		err := protoFields(kv, func(f, _ int, _ uint64, data []byte) error {
			var err error
			switch f {
			case 1:
				key = string(data)
			case 2:
				value, err = decodeAnyValue(data)
			}
			return err
		})
		if _, dup := attrs[key]; dup {
			return fmt.Errorf("key %q twice", key)
		}
		attrs[key] = value
		return err
	})
	return attrs, err
}

func scenarioOtelProcess() error {
	if _, err := OtelAttributeIndex("http.route"); err != nil {
		return err
	}
	err := PublishProcessContext(
		ResourceAttribute{"service.name", "checkout"},
		ResourceAttribute{"service.instance.replicas", int64(-3)},
		ResourceAttribute{"debug", true},
		ResourceAttribute{"sample.ratio", 0.25},
	)
	if err != nil {
		return err
	}
	addr, err := OtelProcessContext()
	if err != nil {
		return err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err
	}
	found := 0
	for _, line := range strings.Split(string(maps), "\n") {
		if strings.Contains(line, "OTEL_CTX") {
			found++
			start, _, _ := strings.Cut(line, "-")
			if a, _ := strconv.ParseUint(start, 16, 64); uintptr(a) != addr {
				return fmt.Errorf("OTEL_CTX mapping at %s, OtelProcessContext says %#x", start, addr)
			}
		}
	}
	if found != 1 {
		return fmt.Errorf("%d OTEL_CTX mappings in /proc/self/maps, want 1", found)
	}
	first, err := readProcessContext(addr)
	if err != nil {
		return err
	}
	want := map[string]any{
		"service.name":                  "checkout",
		"service.instance.replicas":     int64(-3),
		"debug":                         true,
		"sample.ratio":                  0.25,
		"threadlocal.schema_version":    "tld_uptr_v1",
		"threadlocal.attribute_key_map": []string{"http.route"},
	}
	if err := sameAttrs(first, 2, want); err != nil {
		return err
	}

	// Republication replaces the application's attributes, keeps tld's, and
	// moves published_at_ns forward; a new attribute name joins the key map.
	if _, err := OtelAttributeIndex("lang"); err != nil {
		return err
	}
	if err := SetOtelSchemaVersion("tlsdesc_v1_dev"); err != nil {
		return err
	}
	if err := PublishProcessContext(ResourceAttribute{"service.name", "cart"}); err != nil {
		return err
	}
	second, err := readProcessContext(addr)
	if err != nil {
		return err
	}
	if second.publishedAt <= first.publishedAt {
		return fmt.Errorf("published_at_ns %d after %d", second.publishedAt, first.publishedAt)
	}
	want = map[string]any{
		"service.name":                  "cart",
		"threadlocal.schema_version":    "tlsdesc_v1_dev",
		"threadlocal.attribute_key_map": []string{"http.route", "lang"},
	}
	if err := sameAttrs(second, 2, want); err != nil {
		return err
	}

	// Refused: nothing published changes.
	refused := []struct {
		what  string
		attrs []ResourceAttribute
		in    string
	}{
		{"a threadlocal. key", []ResourceAttribute{{"threadlocal.x", "v"}}, ""},
		{"an empty key", []ResourceAttribute{{"", "v"}}, ""},
		{"a Go int", []ResourceAttribute{{"n", 3}}, "type int"},
		{"a NUL in a value", []ResourceAttribute{{"k", "a\x00b"}}, "NUL"},
		{"a duplicate key", []ResourceAttribute{{"k", "a"}, {"k", "b"}}, ""},
	}
	for _, c := range refused {
		err := PublishProcessContext(c.attrs...)
		if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), c.in) {
			return fmt.Errorf("%s: %v, want EINVAL mentioning %q", c.what, err, c.in)
		}
	}
	if err := SetOtelSchemaVersion(""); !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("empty schema version: %v, want EINVAL", err)
	}
	after, err := readProcessContext(addr)
	if err != nil {
		return err
	}
	return sameAttrs(after, 2, want)
}

func sameAttrs(pc processContext, version uint32, want map[string]any) error {
	if pc.version != version || pc.publishedAt == 0 {
		return fmt.Errorf("header: version %d, published_at_ns %d", pc.version, pc.publishedAt)
	}
	if got, exp := fmt.Sprint(pc.attrs), fmt.Sprint(want); got != exp {
		return fmt.Errorf("resource attributes\n got %s\nwant %s", got, exp)
	}
	return nil
}
