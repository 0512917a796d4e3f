from flowfit.cli import main

main()
