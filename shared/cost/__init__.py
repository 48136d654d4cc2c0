"""What a car costs: request units by document size, list prices, the cost model per car and month."""
