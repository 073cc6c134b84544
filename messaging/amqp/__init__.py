"""The AMQP transport: connecting, the consume loop, deliveries, dead-lettering, the relay, confirms.

Importing it makes pika's header decoding tolerant (`header_values`): one message with a header value
pika cannot decode must not stop a consumer.
"""
from messaging.amqp import header_values

header_values.install()
