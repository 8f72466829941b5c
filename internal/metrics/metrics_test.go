package metrics

import (
	"maps"
	"testing"

	"github.com/spear-go/spear/internal/runtime"
)

// TestLabelledGauges: the gauges read per scrape carry one sample per
// label value, and none when their source is missing.
func TestLabelledGauges(t *testing.T) {
	tests := []struct {
		name string
		g    Gauges
		want map[string]float64 // name{label} → value
	}{
		{"no sources", Gauges{}, map[string]float64{}},
		{
			"queue bands",
			Gauges{QueuedByBand: func() []int64 { return []int64{0, 3} }},
			map[string]float64{"spear_queued_executions{band=0}": 0, "spear_queued_executions{band=1}": 3},
		},
		{
			"cached artifacts by runtime",
			Gauges{CachedArtifacts: func() map[runtime.Type]int { return map[runtime.Type]int{runtime.TypeWasm: 2} }},
			map[string]float64{"spear_runtime_cached_artifacts{runtime=wasm}": 2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.g.Running = func() float64 { return 0 }
			tc.g.Waiting = func() float64 { return 0 }
			fams, err := New(tc.g).reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, f := range fams {
				if n := f.GetName(); n != "spear_queued_executions" && n != "spear_runtime_cached_artifacts" {
					continue
				}
				for _, m := range f.GetMetric() {
					l := m.GetLabel()[0]
					got[f.GetName()+"{"+l.GetName()+"="+l.GetValue()+"}"] = m.GetGauge().GetValue()
				}
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("gauges %v, want %v", got, tc.want)
			}
		})
	}
}
