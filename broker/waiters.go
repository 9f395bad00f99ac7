package broker

import "sync"

// waiters wakes long-polling pilots when work appears for a module they wait
// on. A waiter registers one buffered channel on several modules; a wake-up
// of any of them sends to it without blocking and unregisters it there.
type waiters struct {
	mu    sync.Mutex
	byMod map[int64]map[chan struct{}]struct{}
	n     int
}

func newWaiters() *waiters {
	return &waiters{byMod: map[int64]map[chan struct{}]struct{}{}}
}

// add registers ch on the modules; the caller must call remove.
func (w *waiters) add(ch chan struct{}, modules []int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	for _, m := range modules {
		set := w.byMod[m]
		if set == nil {
			set = map[chan struct{}]struct{}{}
			w.byMod[m] = set
		}
		set[ch] = struct{}{}
	}
}

// remove unregisters ch from the modules.
func (w *waiters) remove(ch chan struct{}, modules []int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n--
	for _, m := range modules {
		if set := w.byMod[m]; set != nil {
			delete(set, ch)
			if len(set) == 0 {
				delete(w.byMod, m)
			}
		}
	}
}

// wake signals every waiter of a module.
func (w *waiters) wake(module int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.byMod[module] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// wakeAll signals every waiter (shutdown, app resumed).
func (w *waiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, set := range w.byMod {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// count returns the number of waiting requests.
func (w *waiters) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}
