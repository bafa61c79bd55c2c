package fanout

// Joined is how many subscribers the server's broadcaster delivers to
// (they have finished any replay and are live).
func (s *Server) Joined() int { return s.bc.subCount() }

// Lingering is how many sessions wait for their peer's close.
func (s *Server) Lingering() int64 { return s.lingering.Load() }
