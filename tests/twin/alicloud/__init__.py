"""The Alibaba Cloud twin: an ECS 2014-05-26 RPC endpoint with Cloud Assistant, spoken to by the official SDK."""
