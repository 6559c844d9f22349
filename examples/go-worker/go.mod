module github.com/codepipeline-gateway/codepipeline-gateway/examples/go-worker

go 1.19

require (
	github.com/codepipeline-gateway/codepipeline-gateway/gen/go v0.0.0
	github.com/golang/protobuf v1.5.2 // indirect
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

// The generated stubs live in this repository, beside the proto.
replace github.com/codepipeline-gateway/codepipeline-gateway/gen/go => ../../gen/go
