package server

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestEnumJSON: enum values are read by full name, short name in any case
// or number; a name of no value is read as unknownEnum (refused by the
// method), not as 0; unknown fields are ignored, as Connect's codec does.
func TestEnumJSON(t *testing.T) {
	cases := []struct {
		name, in string
		want     proto.Message
	}{
		{"full name", `{"executionMode":"EXECUTION_MODE_SYNC"}`, &pb.InvokeFunctionRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC}},
		{"short name", `{"executionMode":"ASYNC"}`, &pb.InvokeFunctionRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_ASYNC}},
		{"lower case", `{"executionMode":"stream","invocationType":"new_task"}`,
			&pb.InvokeFunctionRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_STREAM, InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK}},
		{"proto field name", `{"execution_mode":"Sync"}`, &pb.InvokeFunctionRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC}},
		{"number", `{"executionMode":2}`, &pb.InvokeFunctionRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_ASYNC}},
		{"number as a string", `{"executionMode":"1"}`, &pb.InvokeFunctionRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC}},
		{"unknown name", `{"executionMode":"SNYC","taskId":"t"}`, &pb.InvokeFunctionRequest{ExecutionMode: unknownEnum, TaskId: "t"}},
		{"unknown field kept lenient", `{"taskId":"t","newerField":1,"executionMode":"sync"}`,
			&pb.InvokeFunctionRequest{TaskId: "t", ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC}},
		{"status filter", `{"statusFilter":"running"}`, &pb.ListExecutionsRequest{StatusFilter: pb.ExecutionStatus_EXECUTION_STATUS_RUNNING}},
		{"nested", `{"tasks":[{"lastStatus":"failed"}]}`, &pb.ListTasksResponse{Tasks: []*pb.TaskInfo{{LastStatus: pb.ExecutionStatus_EXECUTION_STATUS_FAILED}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.want.ProtoReflect().New().Interface()
			if err := (enumJSON{"json"}).Unmarshal([]byte(tc.in), got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", tc.in, err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("Unmarshal(%s) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	for _, bad := range []string{``, `{`, `{"executionMode":{}}`, `[1]`, "{\"taskId\":\"bad\xff\",\"executionMode\":\"sync\"}"} {
		if err := (enumJSON{"json"}).Unmarshal([]byte(bad), &pb.InvokeFunctionRequest{}); err == nil {
			t.Errorf("Unmarshal(%q): no error", bad)
		}
	}
}

// TestEnumMessages: a refused enum value is explained with the valid
// names.
func TestEnumMessages(t *testing.T) {
	if got, want := enumNames(pb.ExecutionMode(0).Descriptor()), "SYNC, ASYNC, STREAM"; got != want {
		t.Errorf("enumNames = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		v    pb.ExecutionMode
		want string
	}{
		{0, "execution_mode is not set"},
		{unknownEnum, "execution_mode names no value of ExecutionMode"},
		{42, "execution_mode 42 is not a value of ExecutionMode"},
	} {
		if got := enumProblem("execution_mode", tc.v); got != tc.want {
			t.Errorf("enumProblem(%d) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
