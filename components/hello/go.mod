module geminik8s/components/hello

go 1.26.0
