// go_kv: a key-value server in Go speaking the part of RESP (the redis
// protocol) that tests/e2e/jepsen_client.py uses: SET, GET, INCR, DBSIZE,
// PING.  A goroutine per connection, one mutex over the map -- Go's
// runtime threads, netpoller and scheduler are what the ptrace backend must
// record, replay and take live (tests/e2e/test_ptrace_failover.py go).
//
//	go_kv PORT
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	mu   sync.Mutex
	data = map[string]string{}
)

func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 2 || line[0] != '*' {
		return nil, fmt.Errorf("protocol error")
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 1 || n > 8 {
		return nil, fmt.Errorf("protocol error")
	}
	args := make([]string, 0, n)
	for i := 0; i < n; i++ {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if len(hdr) < 2 || hdr[0] != '$' {
			return nil, fmt.Errorf("protocol error")
		}
		l, err := strconv.Atoi(strings.TrimSpace(hdr[1:]))
		if err != nil || l < 0 || l > 1<<20 {
			return nil, fmt.Errorf("protocol error")
		}
		buf := make([]byte, l+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args = append(args, string(buf[:l]))
	}
	return args, nil
}

func reply(args []string) string {
	mu.Lock()
	defer mu.Unlock()
	switch strings.ToUpper(args[0]) {
	case "SET":
		if len(args) == 3 {
			data[args[1]] = args[2]
			return "+OK\r\n"
		}
	case "GET":
		if len(args) == 2 {
			v, ok := data[args[1]]
			if !ok {
				return "$-1\r\n"
			}
			return fmt.Sprintf("$%d\r\n%s\r\n", len(v), v)
		}
	case "INCR":
		if len(args) == 2 {
			n, _ := strconv.ParseInt(data[args[1]], 10, 64)
			n++
			data[args[1]] = strconv.FormatInt(n, 10)
			return fmt.Sprintf(":%d\r\n", n)
		}
	case "DBSIZE":
		return fmt.Sprintf(":%d\r\n", len(data))
	case "PING":
		return "+PONG\r\n"
	}
	return "-ERR unknown command\r\n"
}

func serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	for {
		args, err := readCommand(r)
		if err != nil {
			return
		}
		w.WriteString(reply(args))
		if r.Buffered() == 0 { // answer a pipeline in one write
			if w.Flush() != nil {
				return
			}
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go_kv PORT")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "0.0.0.0:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_kv:", err)
		os.Exit(1)
	}
	fmt.Println("go_kv: listening on port", os.Args[1])
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go serve(c)
	}
}
