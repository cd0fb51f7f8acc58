// go_http: the Go HTTP server of bench/ptrace_bench.py and its load client.
//
//	go_http serve PORT                     answers GET / with a small body
//	go_http load URL CONNS REQUESTS SECS   CONNS keep-alive clients, REQUESTS in
//	                                       all, at most SECS seconds; prints
//	                                       "requests N seconds S rps R errors E"
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func serve(port string) {
	var hits int64
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := atomic.AddInt64(&hits, 1)
		fmt.Fprintf(w, "hello %d at %d\n", n, time.Now().UnixNano())
	})
	if err := http.ListenAndServe("127.0.0.1:"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, "go_http:", err)
		os.Exit(1)
	}
}

func load(url string, conns, total int, secs float64) {
	deadline := time.Now().Add(time.Duration(secs * float64(time.Second)))
	var done, errs int64
	var left = int64(total)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
			for atomic.AddInt64(&left, -1) >= 0 && time.Now().Before(deadline) {
				resp, err := client.Get(url)
				if err != nil {
					atomic.AddInt64(&errs, 1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				atomic.AddInt64(&done, 1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("requests %d seconds %.3f rps %.1f errors %d\n", done, el, float64(done)/el, errs)
}

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "serve" {
		serve(os.Args[2])
		return
	}
	if len(os.Args) >= 6 && os.Args[1] == "load" {
		c, _ := strconv.Atoi(os.Args[3])
		n, _ := strconv.Atoi(os.Args[4])
		s, _ := strconv.ParseFloat(os.Args[5], 64)
		load(os.Args[2], c, n, s)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: go_http serve PORT | go_http load URL CONNS REQUESTS SECS")
	os.Exit(2)
}
