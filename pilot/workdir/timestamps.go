package workdir

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// maxTimestamps bounds the timestamps kept from one attempt.
const maxTimestamps = 10_000

// parseTimestamps parses timestamps.txt: one "<time>[,<label>]" per line,
// blank lines and "#" comments skipped.
func parseTimestamps(data []byte, name string, loc *time.Location, p *problems) []LabeledTime {
	var out []LabeledTime
	skipped := 0
	eachLine(data, func(n int, line string) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			return
		}
		if len(out) >= maxTimestamps {
			skipped++
			return
		}
		lt, err := ParseTimestamp(line, loc)
		if err != nil {
			p.addf(name, n, "%v", err)
			return
		}
		out = append(out, lt)
	})
	if skipped > 0 {
		p.addf(name, 0, "more than %d timestamps: %d ignored", maxTimestamps, skipped)
	}
	return out
}

// ParseTimestamp parses one "<time>[,<label>]" line. Accepted times:
//
//	2023-10-24T18:00:00.123456789+08:00   RFC 3339 (nano), "Z" or an offset
//	2023-10-24T18:00:00.123456+0800       date +%Y-%m-%dT%H:%M:%S.%6N%z (also "+08")
//	2012-11-17T08:52:21,963572856+08:00   comma decimal separator (date --iso-8601=ns)
//	2023-10-24T18:00:00[.999999999]       no zone: in loc (nil = time.Local)
//	2023-10-24 18:00:00[.999999999]       space instead of T, with or without a zone,
//	2023-10-24 18:00:00.25 +0800 CST      also Go's time.Time.String()
//	Tue, 24 Oct 2023 18:00:00 +0800       RFC 1123 with a numeric zone (date -R)
//	Tue Oct 24 18:00:00 CST 2023          date(1)'s default, zone name read in loc
//	1698141600[.123456789]                Unix seconds (date +%s.%N)
//
// The extent of the time is found by its form, so a comma inside it (a
// decimal comma, RFC 1123's "Tue,") is not taken for the label's.
func ParseTimestamp(line string, loc *time.Location) (LabeledTime, error) {
	if loc == nil {
		loc = time.Local
	}
	line = strings.TrimSpace(line)
	end, use, layouts, inLoc := timeExtent(line)
	if end > 0 {
		s := line[:use]
		if len(s) > 20 && s[19] == ',' && isoPrefix(s) { // decimal comma
			s = s[:19] + "." + s[20:]
		}
		rest := strings.TrimSpace(line[end:])
		if rest == "" || rest[0] == ',' {
			label := ""
			if rest != "" {
				label = strings.TrimSpace(rest[1:])
			}
			if t, ok := parseEpoch(s); ok {
				return LabeledTime{Time: t, Label: label}, nil
			}
			for _, l := range layouts {
				var t time.Time
				var err error
				if inLoc {
					t, err = time.ParseInLocation(l, s, loc)
				} else {
					t, err = time.Parse(l, s)
				}
				if err == nil {
					return LabeledTime{Time: t, Label: label}, nil
				}
			}
		}
	}
	return LabeledTime{}, errors.New("not a timestamp: " + strconv.Quote(clip(line, 60)))
}

var (
	isoZoned = []string{
		"2006-01-02T15:04:05.999999999Z07:00",
		"2006-01-02T15:04:05.999999999Z0700",
		"2006-01-02T15:04:05.999999999Z07",
		"2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02 15:04:05.999999999Z0700",
		"2006-01-02 15:04:05.999999999Z07",
		"2006-01-02 15:04:05.999999999 -0700",
		"2006-01-02 15:04:05.999999999 -07:00",
		"2006-01-02 15:04:05.999999999 -0700 MST",
		"2006-01-02T15:04:05.999999999 -0700",
		"2006-01-02T15:04:05.999999999 -07:00",
	}
	isoLocal = []string{"2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"}
	rfc1123  = []string{time.RFC1123Z}
	unixDate = []string{time.UnixDate}
	epoch    = []string{}
)

// timeExtent finds where the time at the start of line ends (end), how
// much of it to parse (use) and how; end is 0 when line does not start
// with a time of a known form.
func timeExtent(line string) (end, use int, layouts []string, inLoc bool) {
	switch {
	case isoPrefix(line):
		return isoEnd(line)
	case len(line) >= 10 && allDigits(line[:10]):
		i := 10
		if i+1 < len(line) && line[i] == '.' && isDigit(line[i+1]) {
			i = digitsEnd(line, i+1)
		}
		return i, i, epoch, false
	case len(line) >= 31 && line[3] == ',':
		return 31, 31, rfc1123, false // "Mon, 02 Jan 2006 15:04:05 -0700"
	case len(line) >= 24:
		// "Mon Jan _2 15:04:05 MST 2006": the zone name's length varies.
		if i := strings.IndexByte(line[20:], ' '); i >= 0 {
			if j := digitsEnd(line, 20+i+1); j-(20+i+1) == 4 {
				return j, j, unixDate, true
			}
		}
	}
	return 0, 0, nil, false
}

// isoPrefix: "2006-01-02T15:04:05" or with a space for the T.
func isoPrefix(s string) bool {
	if len(s) < 19 {
		return false
	}
	for i := 0; i < 19; i++ {
		c := s[i]
		switch i {
		case 4, 7:
			if c != '-' {
				return false
			}
		case 10:
			if c != 'T' && c != ' ' {
				return false
			}
		case 13, 16:
			if c != ':' {
				return false
			}
		default:
			if !isDigit(c) {
				return false
			}
		}
	}
	return true
}

// isoEnd scans an ISO time's fraction and zone.
func isoEnd(s string) (int, int, []string, bool) {
	i := 19
	if i+1 < len(s) && (s[i] == '.' || s[i] == ',') && isDigit(s[i+1]) {
		i = digitsEnd(s, i+1)
	}
	switch {
	case i < len(s) && s[i] == 'Z':
		return i + 1, i + 1, isoZoned, false
	case i < len(s) && (s[i] == '+' || s[i] == '-'):
		j := offsetEnd(s, i)
		return j, j, isoZoned, false
	case i+1 < len(s) && s[i] == ' ' && (s[i+1] == '+' || s[i+1] == '-'):
		j := offsetEnd(s, i+1)
		// Go's String(): " -0700 MST", or " +0800 +0800" for an unnamed
		// zone, whose second offset Go cannot parse and which says
		// nothing more: it is skipped.
		if j+1 < len(s) && s[j] == ' ' && isUpper(s[j+1]) {
			k := j + 1
			for k < len(s) && isUpper(s[k]) {
				k++
			}
			return k, k, isoZoned, false
		}
		if j+1 < len(s) && s[j] == ' ' && (s[j+1] == '+' || s[j+1] == '-') {
			return offsetEnd(s, j+1), j, isoZoned, false
		}
		return j, j, isoZoned, false
	}
	return i, i, isoLocal, true
}

// offsetEnd scans "+08", "+0800" or "+08:00" starting at the sign.
func offsetEnd(s string, i int) int {
	j := digitsEnd(s, i+1)
	if j < len(s) && s[j] == ':' {
		j = digitsEnd(s, j+1)
	}
	return j
}

func digitsEnd(s string, i int) int {
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return i
}

// parseEpoch accepts Unix seconds as `date +%s[.%N]` prints them
// (10 digits: 2001–2286).
func parseEpoch(s string) (time.Time, bool) {
	sec, frac, _ := strings.Cut(s, ".")
	if len(sec) != 10 || len(frac) > 9 || !allDigits(sec) || !allDigits(frac) {
		return time.Time{}, false
	}
	n, _ := strconv.ParseInt(sec, 10, 64)
	ns := int64(0)
	if frac != "" {
		ns, _ = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	}
	return time.Unix(n, ns), true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
