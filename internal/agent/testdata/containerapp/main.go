// Command containerapp is the container module test's application: it prints its version and
// runs until stopped, unless its version is "bad", when it exits at once (a release that does
// not come up).
package main

import (
	"fmt"
	"os"
	"time"
)

var version = "dev"

func main() {
	fmt.Println("containerapp", version)
	if version == "bad" {
		os.Exit(1)
	}
	for {
		time.Sleep(time.Hour)
	}
}
