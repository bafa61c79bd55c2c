// Package crawl asks relays to crawl the PDS: it sends
// com.atproto.sync.requestCrawl with the public hostname to each
// configured relay at start-up, again when no subscriber has been
// connected for a while, and otherwise at most once per interval, backing
// off on failure.
//
// pdsmux is the only component that should ask relays to crawl: the
// replicas' own COCOON_RELAYS must stay unset, or relays are pointed at a
// single replica's lossy stream.
//
// Nothing is ever sent to a host that is not configured. It does not
// serve subscribers (internal/fanout); it only reads how many there are.
package crawl
