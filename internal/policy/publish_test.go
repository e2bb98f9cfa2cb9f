package policy

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestStorePublishesInOrder: changes made at once from several goroutines
// (API rules, hosted devices, org rules, the config, as the node's API,
// devices, organisations and reloads make them) leave the filter with the
// store's last matcher: Publish hands each matcher over under the store's
// lock, so an older one never replaces a newer.
func TestStorePublishesInOrder(t *testing.T) {
	s, _, err := OpenStore("", nil)
	if err != nil {
		t.Fatal(err)
	}
	f := NewFilter(Local{Addr: netip.MustParseAddr("fd00::1")}, Compile(nil), NewConntrack(0), nil)
	s.Publish(f.SetMatcher)
	if f.Matcher() != s.Matcher() {
		t.Fatal("Publish did not hand over the current matcher")
	}
	var rules [4][50]Rule
	for i := range 50 {
		rules[0][i] = mustRule(t, "*", "tcp", fmt.Sprint(1000+i))
		rules[2][i] = mustRule(t, "*", "udp", fmt.Sprint(2000+i))
		rules[3][i] = mustRule(t, "*", "tcp", fmt.Sprint(3000+i))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				switch g {
				case 0:
					if _, err := s.Allow(rules[0][i], time.Now()); err != nil {
						t.Error(err)
					}
				case 1:
					s.SetHosted([]netip.Addr{netip.AddrFrom16([16]byte{0xfd, 15: byte(i)})})
				case 2:
					s.SetOrgRules("o", uint64(i), []Rule{rules[2][i]})
				case 3:
					s.SetConfig([]Rule{rules[3][i]}, nil)
				}
			}
		}()
	}
	wg.Wait()
	if f.Matcher() != s.Matcher() {
		t.Fatal("the filter's matcher is not the store's last one")
	}
	s.Publish(nil)
	s.SetHosted(nil)
	if f.Matcher() == s.Matcher() {
		t.Error("Publish(nil) did not stop the publishing")
	}
}
