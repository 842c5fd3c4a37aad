"""Vigil talking to what operators already run, beside the ZeroMQ stream:

* `settings.py`: the `mqtt:` and `notify:` sections (dataclasses validated at load, no heavy
  imports);
* `mqtt.py`: `MqttBridge`, alerts and states to an MQTT broker (paho-mqtt), caught up from the
  journal by seq after an outage;
* `discovery.py`: Home Assistant MQTT discovery (the entities' config payloads and topics);
* `notifications.py`: `Notifications`, apprise notification rules (Telegram, e-mail, ntfy, Slack,
  webhooks, ...).

Each owns its threads and resources, takes alerts from the event loop without ever blocking it
(bounded queues, drops counted in Prometheus), and stops within its `close` timeout.
"""
