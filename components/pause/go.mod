module geminik8s/components/pause

go 1.26.0
