package fanout

// Joined is how many subscribers the server's broadcaster delivers to
// (they have finished any replay and are live).
func (s *Server) Joined() int { return s.bc.subCount() }
