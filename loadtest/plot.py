"""Plot texts/s and p95 latency against users from a Locust run with --csv-full-history.

python loadtest/plot.py results/loadtest/grpc-step_stats_history.csv results/loadtest/grpc-step.png
"""

import argparse

from emotion_lab.loadtest import plot_history


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("history_csv", help="the *_stats_history.csv that --csv-full-history wrote")
    parser.add_argument("png", help="the picture to write")
    args = parser.parse_args(argv)
    print(plot_history(args.history_csv, args.png))


if __name__ == "__main__":
    main()
