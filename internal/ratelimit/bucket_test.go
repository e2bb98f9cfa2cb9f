package ratelimit

import "testing"

func TestBucket(t *testing.T) {
	var b Bucket
	const rate, burst = 1000, 3000 // units a second, and at once
	b.Init(0, burst)
	if !b.Allow(0, 2000, rate, burst) || b.Allow(0, 1001, rate, burst) || !b.Allow(0, 1000, rate, burst) {
		t.Fatal("the burst is not what Init gave")
	}
	if b.Allow(5e8, 501, rate, burst) || !b.Allow(5e8, 500, rate, burst) {
		t.Fatal("half a second did not refill half the rate")
	}
	if !b.Allow(1e12, burst, rate, burst) || b.Allow(1e12, 1, rate, burst) {
		t.Fatal("a long pause refilled beyond the burst")
	}
	if b.Allow(1e12-1e9, 1, rate, burst) {
		t.Fatal("a clock that went back refilled the bucket")
	}
}
