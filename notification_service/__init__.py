"""NotificationService: tells the user, once, that their order's stock is reserved."""
