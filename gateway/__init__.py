"""The HTTP gateway: finds workers through the DHT and calls them over RPC."""
