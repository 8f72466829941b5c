package harness

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Stat is one side of a row: medians over rounds of the per-round p50 and
// p99 latency and throughput, or a single value with a unit.
type Stat struct {
	P50ms   float64 `json:"p50_ms,omitempty"`
	P99ms   float64 `json:"p99_ms,omitempty"`
	PerSec  float64 `json:"per_sec,omitempty"`
	Value   float64 `json:"value,omitempty"`
	Unit    string  `json:"unit,omitempty"`
	Samples int     `json:"samples,omitempty"`
}

// Row statuses.
const (
	StatusPass  = "PASS"
	StatusMiss  = "MISS"
	StatusInfo  = "INFO" // measured, no target
	StatusError = "ERROR"
	StatusSkip  = "SKIP"
)

// Row is one line of the result table.
type Row struct {
	ID       string `json:"id"`
	Spear    *Stat  `json:"spear,omitempty"`
	Baseline *Stat  `json:"baseline,omitempty"`
	// BaselineName says what Baseline measured.
	BaselineName string `json:"baseline_name,omitempty"`
	// LatencyRatio is spear p50 / baseline p50; P99Ratio likewise; RateRatio
	// is spear throughput / baseline throughput; ValueRatio spear value /
	// baseline value.
	LatencyRatio float64 `json:"latency_ratio,omitempty"`
	P99Ratio     float64 `json:"p99_ratio,omitempty"`
	RateRatio    float64 `json:"throughput_ratio,omitempty"`
	ValueRatio   float64 `json:"value_ratio,omitempty"`
	Target       string  `json:"target,omitempty"`
	Status       string  `json:"status"`
	Note         string  `json:"note,omitempty"`
}

// ratios fills in the ratios from Spear and Baseline.
func (r *Row) ratios() {
	if r.Spear == nil || r.Baseline == nil {
		return
	}
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	r.LatencyRatio = div(r.Spear.P50ms, r.Baseline.P50ms)
	r.P99Ratio = div(r.Spear.P99ms, r.Baseline.P99ms)
	r.RateRatio = div(r.Spear.PerSec, r.Baseline.PerSec)
	r.ValueRatio = div(r.Spear.Value, r.Baseline.Value)
}

// Machine describes where the benchmark ran.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryMiB int64  `json:"memory_mib"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	Docker    string `json:"docker,omitempty"`
	Date      string `json:"date"`
	Host      string `json:"host"`
}

// Report is the benchmark's output.
type Report struct {
	Machine  Machine       `json:"machine"`
	Mode     string        `json:"mode"`
	Rounds   int           `json:"rounds"`
	RoundDur string        `json:"round_duration"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	Rows     []Row         `json:"rows"`
}

func describeMachine(docker string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339), Docker: docker}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryMiB = kb >> 10
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		m.Go = strings.TrimSpace(string(out))
	}
	m.Host, _ = os.Hostname()
	return m
}

func fnum(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	case v >= 10:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func cells(s *Stat) []string {
	if s == nil {
		return []string{"", "", ""}
	}
	if s.Unit != "" {
		return []string{fnum(s.P50ms), fnum(s.P99ms), fnum(s.Value) + " " + s.Unit}
	}
	return []string{fnum(s.P50ms), fnum(s.P99ms), fnum(s.PerSec)}
}

func ratioCell(r Row) string {
	var parts []string
	if r.LatencyRatio != 0 {
		parts = append(parts, fmt.Sprintf("p50 %.2fx", r.LatencyRatio))
	}
	if r.P99Ratio != 0 {
		parts = append(parts, fmt.Sprintf("p99 %.2fx", r.P99Ratio))
	}
	if r.RateRatio != 0 {
		parts = append(parts, fmt.Sprintf("thr %.2fx", r.RateRatio))
	}
	if r.ValueRatio != 0 {
		parts = append(parts, fmt.Sprintf("%.2fx", r.ValueRatio))
	}
	return strings.Join(parts, " ")
}

var header = []string{"row", "spear p50 ms", "p99 ms", "thr /s | value", "baseline", "p50 ms", "p99 ms", "thr /s | value", "ratio", "target", "result"}

func tableRows(rep *Report) [][]string {
	var out [][]string
	for _, r := range rep.Rows {
		line := []string{r.ID}
		line = append(line, cells(r.Spear)...)
		line = append(line, r.BaselineName)
		line = append(line, cells(r.Baseline)...)
		res := r.Status
		line = append(line, ratioCell(r), r.Target, res)
		out = append(out, line)
	}
	return out
}

// WriteTable prints the aligned table and the notes.
func WriteTable(w io.Writer, rep *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, l := range tableRows(rep) {
		fmt.Fprintln(tw, strings.Join(l, "\t"))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	for _, r := range rep.Rows {
		if r.Note != "" {
			fmt.Fprintf(w, "  %s: %s\n", r.ID, r.Note)
		}
	}
}

func writeMarkdown(w io.Writer, rep *Report) {
	m := rep.Machine
	fmt.Fprintf(w, "# Spear benchmark (%s)\n\n", rep.Mode)
	fmt.Fprintf(w, "- date: %s\n- cpu: %s (%d cores)\n- memory: %d MiB\n- kernel: %s\n- go: %s\n- docker: %s\n- rounds: %d x %s, interleaved; medians of per-round p50/p99/throughput\n- elapsed: %s\n\n",
		m.Date, m.CPU, m.Cores, m.MemoryMiB, m.Kernel, m.Go, orNone(m.Docker), rep.Rounds, rep.RoundDur, rep.Elapsed.Round(time.Second))
	fmt.Fprintln(w, "| "+strings.Join(header, " | ")+" |")
	fmt.Fprintln(w, strings.Repeat("|---", len(header))+"|")
	for _, l := range tableRows(rep) {
		fmt.Fprintln(w, "| "+strings.Join(l, " | ")+" |")
	}
	fmt.Fprintln(w)
	for _, r := range rep.Rows {
		if r.Note != "" {
			fmt.Fprintf(w, "- **%s**: %s\n", r.ID, r.Note)
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Save writes latest.json and latest.md (and timestamped copies) to dir.
func Save(dir string, rep *Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	var md strings.Builder
	writeMarkdown(&md, rep)
	stamp := time.Now().UTC().Format("20060102T150405Z") + "-" + rep.Mode
	var written []string
	for name, data := range map[string][]byte{
		"latest.json": b, "latest.md": []byte(md.String()),
		stamp + ".json": b, stamp + ".md": []byte(md.String()),
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return written, err
		}
		written = append(written, p)
	}
	return written, nil
}
