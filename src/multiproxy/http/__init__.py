"""HTTP/1.x machinery shared by the forward and reverse proxies."""
