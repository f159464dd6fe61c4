from pumpwatch.cli import main

main()
