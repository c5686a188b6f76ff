"""Bridge edgesight's bus to MQTT: every message re-published as JSON on ``edgesight/<kind>/<stream_id>``.

    pip install ./client paho-mqtt     # the bus client alone: no need for the pipeline's dependencies
    python deploy/bridges/mqtt_bridge.py --bus tcp://127.0.0.1:5555 --mqtt mqtt.example.com [--topic events.]

Thumbnails (the binary third part of event messages) are not forwarded. For Kafka, replace the MQTT client
with a producer (``kafka-python``: ``KafkaProducer(...).send(topic, json_bytes)``): the loop stays the same.
"""

from __future__ import annotations

import argparse
import json
import sys

from edgesight_client import Subscriber


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bus", default="tcp://127.0.0.1:5555")
    parser.add_argument("--topic", action="append", default=[], help="bus topic prefix (repeatable; default all)")
    parser.add_argument("--mqtt", required=True, help="MQTT broker host")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="edgesight")
    parser.add_argument("--qos", type=int, choices=[0, 1, 2], default=1)
    args = parser.parse_args()
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        print("mqtt_bridge: needs paho-mqtt (pip install paho-mqtt)", file=sys.stderr)
        return 2
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(args.mqtt, args.port)
    client.loop_start()
    with Subscriber(args.bus, args.topic or [""]) as sub:
        try:
            for msg in sub:
                kind, _, stream = msg.topic.partition(".")
                client.publish(f"{args.prefix}/{kind}/{stream}", json.dumps(msg.raw), qos=args.qos)
        except KeyboardInterrupt:
            pass
    client.loop_stop()
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
