"""The AMQP transport: connecting, the consume loop, deliveries, dead-lettering, the relay, confirms."""
