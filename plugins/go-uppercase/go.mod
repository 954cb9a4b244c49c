module weir.dev/plugins/go-uppercase

go 1.24

require weir.dev/weir v0.0.0

replace weir.dev/weir => ../../plugin-sdk/go
