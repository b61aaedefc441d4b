from fedsketch.cli import main

main()
