"""``kraftwerk-consumer`` console entry point."""

from kraftwerk_apps.common.server import serve
from kraftwerk_apps.consumer.settings import ConsumerSettings


def main() -> None:
    serve("kraftwerk_apps.consumer.app:create_app", ConsumerSettings())


if __name__ == "__main__":
    main()
