"""InventoryService: reserves stock for each OrderPlaced event, exactly once."""
