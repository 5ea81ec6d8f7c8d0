"""A plain aiokafka producer flat out: the reference for POST /send/batch in loadtest.py.

``send()`` for every record (acks=all, idempotent, like the real producer), awaiting the
delivery futures 1000 at a time.  Prints one JSON line with ``msgs_per_s`` and
``cpu_us_per_msg``.

Usage: python flat_producer.py BOOTSTRAP TOPIC COUNT [RECORD_BYTES]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaProducer


async def main(bootstrap: str, topic: str, count: int, size: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        value = b"x" * size
        started, cpu = time.perf_counter(), time.process_time()
        futures = []
        for _ in range(count):
            futures.append(await producer.send(topic, value))
            if len(futures) >= 1000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await producer.stop()
    print(json.dumps({"msgs_per_s": count / wall, "cpu_us_per_msg": cpu / count * 1e6}))


if __name__ == "__main__":
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), size))
