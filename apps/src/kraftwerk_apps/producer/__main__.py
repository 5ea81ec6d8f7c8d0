"""``kraftwerk-producer`` console entry point."""

from kraftwerk_apps.common.server import serve
from kraftwerk_apps.producer.settings import ProducerSettings


def main() -> None:
    serve("kraftwerk_apps.producer.app:create_app", ProducerSettings())


if __name__ == "__main__":
    main()
