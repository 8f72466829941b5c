package server

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	pb "github.com/spear-go/spear/api/spearlet"
)

// scrape reads /metrics and returns every sample as "name{k=v,...}" →
// value (histograms: name_count and name_sum).
func scrape(t *testing.T, e *env) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.base+"/metrics", nil)
	r, body := httpDo(t, req)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", r.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name + labelString(m.GetLabel())
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name+"_count"+labelString(m.GetLabel())] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"+labelString(m.GetLabel())] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.GetName() + "=" + l.GetValue()
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// TestMetricsFollowInvocations: known invocations move exactly the metrics
// they should, by the amounts they should.
func TestMetricsFollowInvocations(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	var hooks atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hooks.Add(1)
	}))
	defer hook.Close()

	before := scrape(t, e)
	// 2 sync COMPLETED and 1 sync FAILED (process), 1 sync wasm COMPLETED.
	for _, c := range []struct{ task, in string }{{"echo", "a"}, {"echo", "b"}, {"fail", "x"}, {"wasm-echo", "w"}} {
		if _, err := e.grpc.InvokeFunction(ctx, invokeReq(c.task, c.in, pb.ExecutionMode_EXECUTION_MODE_SYNC)); err != nil {
			t.Fatal(err)
		}
	}
	// An async execution that fails twice (1 retry, then dead-lettered),
	// and an async one that completes and calls back.
	dead := invokeReq("fail", "y", pb.ExecutionMode_EXECUTION_MODE_ASYNC)
	dead.Context = &pb.ExecutionContext{MaxRetries: 1}
	good := invokeReq("echo", "z", pb.ExecutionMode_EXECUTION_MODE_ASYNC)
	good.CallbackUrl = hook.URL
	var ids []string
	for _, req := range []*pb.InvokeFunctionRequest{dead, good} {
		resp, err := e.grpc.InvokeFunction(ctx, req)
		if err != nil || !resp.Success {
			t.Fatalf("async: %v %v", err, resp)
		}
		ids = append(ids, resp.ExecutionId)
	}
	for _, id := range ids {
		if _, err := e.mgr.Views.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	var after map[string]float64
	for {
		after = scrape(t, e)
		if after["spear_callback_deliveries_total{state=delivered}"] >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	delta := func(key string) float64 { return after[key] - before[key] }
	for key, want := range map[string]float64{
		"spear_executions_total{mode=sync,runtime=process,status=COMPLETED,task=echo}":   2,
		"spear_executions_total{mode=sync,runtime=process,status=FAILED,task=fail}":      1,
		"spear_executions_total{mode=sync,runtime=wasm,status=COMPLETED,task=wasm-echo}": 1,
		"spear_executions_total{mode=async,runtime=process,status=FAILED,task=fail}":     1,
		"spear_executions_total{mode=async,runtime=process,status=COMPLETED,task=echo}":  1,
		"spear_retries_total{task=fail}":                                                 1,
		"spear_dead_letters_total{task=fail}":                                            1,
		"spear_callback_deliveries_total{state=delivered}":                               1,
		"spear_cold_start_seconds_count{runtime=process}":                                5, // per execution (its last run)
		"spear_cold_start_seconds_count{runtime=wasm}":                                   1,
		"spear_execution_duration_seconds_count{runtime=process}":                        5, // terminal executions
		"spear_estimate_ratio_count":                                                     1, // the completed async one
	} {
		if got := delta(key); got != want {
			t.Errorf("%s moved by %v, want %v", key, got, want)
		}
	}
	if hooks.Load() != 1 {
		t.Errorf("callback server got %d requests, want 1", hooks.Load())
	}
	if after["spear_running_executions"] != 0 {
		t.Errorf("spear_running_executions = %v at rest", after["spear_running_executions"])
	}
	for band := range 5 {
		key := "spear_queued_executions{band=" + string(rune('0'+band)) + "}"
		if _, ok := after[key]; !ok {
			t.Errorf("no %s", key)
		}
	}
}
