"""The rehearsal hub mirror: the paper profile's repositories with random weights, for running it offline."""
